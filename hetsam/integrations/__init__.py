"""AutoSAM inside training frameworks: :mod:`hetsam.integrations.lightning` (PyTorch Lightning)
and :mod:`hetsam.integrations.transformers` (the Hugging Face Trainer). Each imports its framework
when imported; install them with ``pip install 'hetsam[integrations]'``."""
