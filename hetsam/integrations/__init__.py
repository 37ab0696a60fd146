"""AutoSAM inside training frameworks: :mod:`hetsam.integrations.lightning` (PyTorch Lightning),
:mod:`hetsam.integrations.transformers` (the Hugging Face Trainer) and
:mod:`hetsam.integrations.accelerate` (a Hugging Face Accelerate loop). Each imports its framework
when imported; install them with ``pip install 'hetsam[integrations]'``."""
