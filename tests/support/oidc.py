"""A real OpenID provider for the single sign-on tests: tests/e2e/js/oidc_provider.mjs (oidc-provider on Node).

``OidcProvider`` starts it on a free port with the clients, accounts and service-account groups a test
names; ``accounts_set`` rewrites the accounts file (the provider reads it at every sign-in), which is
how a test moves someone between groups. ``client_credentials`` asks its token endpoint for a JWT
access token, as a CI pipeline would.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

from tests.support.processes import ServerProcess, free_port

JS_DIR = Path(__file__).resolve().parents[1] / "e2e" / "js"
SCRIPT = JS_DIR / "oidc_provider.mjs"
API_AUDIENCE = "https://gateway.example/api"


class OidcProvider(ServerProcess):
    def __init__(
        self,
        *,
        clients: list[dict],
        accounts: dict[str, dict],
        client_groups: dict[str, list[str]] | None = None,
        api_audience: str = API_AUDIENCE,
    ) -> None:
        node = shutil.which("node")
        assert node, "node is not installed: run the tests through scripts/test.sh, which installs it"
        assert (JS_DIR / "node_modules" / "oidc-provider").is_dir(), (
            "oidc-provider is missing: scripts/test.sh runs npm ci"
        )
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.api_audience = api_audience
        workdir = Path(tempfile.mkdtemp(prefix="oidc-provider-"))
        self.accounts_file = workdir / "accounts.json"
        self.accounts_set(accounts)
        config = {
            "port": self.port,
            "issuer": self.issuer,
            "accountsFile": str(self.accounts_file),
            "clients": clients,
            "clientGroups": client_groups or {},
            "apiAudience": api_audience,
        }
        super().__init__(
            [node, str(SCRIPT), json.dumps(config)],
            env={"PATH": "/usr/bin:/bin", "NODE_ENV": "test"},
            ready_url=f"{self.issuer}/.well-known/openid-configuration",
            log_path=workdir / "provider.log",
            start_timeout=60,
        )

    def accounts_set(self, accounts: dict[str, dict]) -> None:
        self.accounts_file.write_text(json.dumps(accounts))

    def client_credentials(self, client_id: str, secret: str, *, resource: str | None = None) -> str:
        """A JWT access token for ``resource`` (the API audience by default), from the token endpoint."""
        body = urllib.parse.urlencode(
            {"grant_type": "client_credentials", "scope": "api", "resource": resource or self.api_audience}
        ).encode()
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        request = urllib.request.Request(
            f"{self.issuer}/token",
            data=body,
            headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())["access_token"]
