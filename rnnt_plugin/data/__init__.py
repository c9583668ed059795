"""Data: the synthetic speech corpus, LibriSpeech download/preparation, and webdataset shards.

Modules (import the one you need; none imports NeMo at module level):
- ``synth``       multi-speaker TTS corpus in the LibriSpeech layout (``generate_corpus``)
- ``grammar``     the generative command grammar of the ``commands`` domain
- ``text``        transcript normalisation and the King James Bible sentences of the ``bible`` domain
- ``librispeech`` manifests + sentencepiece tokenizer from a LibriSpeech-layout directory (``prepare``)
- ``download``    LibriSpeech archives: resumable download, MD5 check, safe extraction
- ``shards``      webdataset tar shards for NeMo's tarred audio datasets
- ``fileio``      atomic writes
"""
