"""``xconv sandbox``: an aiohttp stand-in for X's ``POST /{version}/measurement/conversions``.

Pure parts (no I/O): ``validation`` (body rules), ``ratelimit`` (fixed windows, injectable
clock), ``faults`` (seeded decisions), ``auth`` (oauthlib verification, nonce memory),
``state`` (counters). ``app`` holds the thin aiohttp handlers and ``server`` runs them.
"""
