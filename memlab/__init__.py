"""memlab: measure how language models learn, recognize, recall and forget facts when fine-tuned.

Importing memlab turns on offline mode for the Hugging Face libraries: nothing reaches a hub at run time.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
