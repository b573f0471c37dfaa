"""images: class-conditional rectified flow on images that ship offline (MNIST-5k) or the user's own."""

from flowsci_domains.images.domain import Images

__all__ = ["Images"]
