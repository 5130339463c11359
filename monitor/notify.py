"""Notify: STUB - being implemented (the only module that imports Apprise)."""
from __future__ import annotations

from dataclasses import dataclass

from .config import ChannelConfig
from .model import Notification


def validate_url(url: str) -> str | None:
    """None when some Apprise plugin accepts ``url``; else the reason, for config errors."""
    raise NotImplementedError


@dataclass(frozen=True)
class SendResult:
    ok: bool
    error: str | None = None


class Notifier:
    def __init__(self, channels: list[ChannelConfig], timeout: float = 30.0):
        raise NotImplementedError

    async def send(self, notification: Notification) -> SendResult:
        raise NotImplementedError
