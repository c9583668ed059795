"""Decoding and evaluation with a NeMo model.

- ``greedy``: the core's batched greedy search as NeMo's decoding strategy ``rnnt_plugin_greedy`` (the default).
- ``beam``: NeMo's beam search switched on for evaluation and transcription.
- ``streaming``: chunk-by-chunk transcription with carried encoder and decoder states.
- ``vtln``: test-time vocal tract length normalisation.
- ``evaluation``: transcription of files and WER of a manifest.
"""
