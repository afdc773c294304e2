"""Citizen login: the gateway as OpenID Connect relying party towards DigiD (docs/login.md).

`setup(app)` adds `/login/callback` and friends; `begin_login` sends a browser to DigiD and back
to a path on the gateway; `current_citizen` is that browser's verified login, or None.
"""

from gateway.login.flow import Citizen, begin_login, current_citizen, safe_return_to, setup

__all__ = ["Citizen", "begin_login", "current_citizen", "safe_return_to", "setup"]
