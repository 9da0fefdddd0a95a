"""Views: batched, on-device, seeded augmentations that turn one batch into two views."""

from core.augment.views import Views, build_views

__all__ = ["Views", "build_views"]
