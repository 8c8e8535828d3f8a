"""aestudy: a measured study of deterministic (AE) vs variational (VAE) autoencoders."""

__version__ = "0.1.0"
