"""Training: the driver (``trainer``: Hydra config -> Lightning trainer + exp_manager -> ``.nemo``) and its
callbacks: ``monitor`` (LR, gradient norm, throughput), ``resume`` (sampler position and RNG states for an exact
resume), ``mlperf_logging`` (the MLPerf log and the stop at the target WER). The EMA and the LR time budget are
callbacks of :mod:`rnnt_plugin.optim`."""
