"""bench: compare pretrained image backbones on small (medical) image datasets."""

__version__ = "0.1.0"
