"""The local stack's test kit: what the test suite and the benchmarks both need to drive
the real stack from outside, in one place both import.

`stack` reads the devstack's env file and names its Redis databases; `servers` starts
what a test or benchmark may break on its own (a Redis, a Prometheus proxy); `ws` holds
the websocket clients (storms of viewers, hostile frame writers), built on wsproto;
`podwatch` watches what really got deleted. Pytest fixtures stay in tests/ and wrap
these. Never shipped in the image.
"""
