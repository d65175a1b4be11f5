"""The relay's HTTP and WebSocket API, one router per domain (auth, scribe, admin,
enroll, archive), assembled in `main.py`; shared dependencies are the named types of
`deps.py`."""
