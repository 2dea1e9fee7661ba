"""fadkd: feature-alignment knowledge distillation of transformer language models."""

__version__ = "0.1.0"
