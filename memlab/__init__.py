"""memlab: measure how language models learn, recognize, recall and forget facts when fine-tuned.

Importing memlab turns on offline mode for the Hugging Face libraries (nothing reaches a hub at run time)
and keeps library noise that is not about the user's run off the terminal (memlab/quiet.py).
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"

from memlab import quiet  # noqa: E402  (library noise off the terminal before any library logs)

quiet.install()
