"""The platform node: holds applicants' features, encrypts them under the bank's key, submits them."""

from __future__ import annotations

from blindscore.platform_node.flow import PlatformNode

__all__ = ["PlatformNode"]
