"""The websocket viewers connect to. Server -> client only (DESIGN.md, "Websocket")."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from dashboard.publish import GROUP, alatest_frames


class InfraConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()
        for text in await alatest_frames():
            await self.send(text_data=text)

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Viewers have nothing to say; anything they send is ignored.
        return

    async def infra_frame(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])
