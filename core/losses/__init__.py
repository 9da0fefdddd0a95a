"""NT-Xent family of contrastive losses, the exact chunked path, distributed gathering and GradCache."""

from core.losses.gradcache import grad_cache_step
from core.losses.ntxent import NTXentLoss

__all__ = ["NTXentLoss", "grad_cache_step"]
