"""Credential shapes: detect-secrets' maintained token patterns plus the LLM providers' own key formats.

detect-secrets (Yelp, 1.5.0) runs offline, but its scanner is built for source files: ``scan_line`` on a
1 KB prompt took ~20 ms here (and ~0.8 s on 50 KB), and its high-entropy plugins flag ordinary English
words in prose. So the gateway reuses what is maintained there, the token patterns of its regex-based
plugins (``RegexBasedDetector.denylist``), run by the gateway's own scanner (bench/guardrails.py has the
figures), without entropy guessing. Plugins whose patterns are keyword-context heuristics for config
files (IBM, Cloudant, SoftLayer, Basic auth URLs, Artifactory, public IPs) are left out: in prose they
mask words, not secrets.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector

DETECT_SECRETS_PLUGINS = (
    AWSKeyDetector,
    AzureStorageKeyDetector,
    DiscordBotTokenDetector,
    GitHubTokenDetector,
    GitLabTokenDetector,
    JwtTokenDetector,
    MailchimpDetector,
    OpenAIDetector,
    PrivateKeyDetector,
    PypiTokenDetector,
    SendGridDetector,
    SlackDetector,
    SquareOAuthDetector,
    StripeDetector,
)
# Left out: TelegramBotTokenDetector (``\d{8,10}:...`` has no literal to look for: ~50 us per KB of prose).

# Key formats detect-secrets 1.5.0 predates or does not cover: OpenAI project/service keys, Anthropic,
# Google AI, Hugging Face, Groq, xAI, the gateway's own virtual keys (sk-...), and bearer tokens. They
# start at a word boundary, checked after the match (a leading \b would cost the literal-prefix scan).
EXTRA_PATTERNS = (
    r"sk-(?:proj-|ant-(?:api|admin)\d\d-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",
    r"AIza[0-9A-Za-z_-]{35}",
    r"hf_[A-Za-z0-9]{30,}",
    r"gsk_[A-Za-z0-9]{40,}",
    r"xai-[A-Za-z0-9]{40,}",
    r"[Bb]earer\s+[A-Za-z0-9._~+/-]{20,}=*",
    # A whole PEM private key, header to footer (detect-secrets flags only its BEGIN line, and masking that
    # alone would send the key material on). Unterminated at the end of the text: to the end (a stream
    # holds it back while it grows).
    r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY((?: BLOCK)?)-----[A-Za-z0-9+/=\s:,.-]*?(?:-----END \1PRIVATE KEY\2-----|$)",
)
# Patterns without a literal prefix scan every position of the text; these literals must be in the
# text for them to match at all, and a substring test (C speed) skips them on ordinary prose.
REQUIRED_LITERAL: dict[str, tuple[str, ...]] = {
    "[0-9a-z]{32}-us[0-9]{1,2}": ("-us",),
    "(?:r|s)k_live_[0-9a-zA-Z]{24}": ("k_live_",),
    "(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}": ("A3T", "ABIA", "ACCA", "AKIA", "ASIA"),
    "sk-[A-Za-z0-9-_]*[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}": ("T3BlbkFJ",),
    r"[Bb]earer\s+[A-Za-z0-9._~+/-]{20,}=*": ("earer",),
    EXTRA_PATTERNS[-1]: ("PRIVATE KEY",),
}
_SLACK_WEBHOOK_LITERAL = ("hooks.slack.com",)


def _leading_word(pattern: str) -> tuple[str, ...] | None:
    """A case-insensitive pattern's leading letters ("aws", "xox"): looked for in the lower-cased text."""
    m = re.match(r"[a-z]{3,}", pattern)
    return (m.group(0),) if m else None


class SecretPatterns:
    """Each pattern on its own (one alternation of them all ran ~5x slower: no literal-prefix scan),
    with the same ``finditer(text, pos)`` as a compiled pattern."""

    def __init__(self, plugins=DETECT_SECRETS_PLUGINS, extra=EXTRA_PATTERNS) -> None:
        entries: list[tuple[re.Pattern[str], tuple[str, ...] | None, bool]] = []
        for plugin in plugins:
            for compiled in plugin.denylist:
                literal = REQUIRED_LITERAL.get(compiled.pattern)
                if literal is None and compiled.flags & re.IGNORECASE:
                    literal = _SLACK_WEBHOOK_LITERAL if "slack" in compiled.pattern else _leading_word(compiled.pattern)
                entries.append((compiled, literal, False))
        for pattern in extra:
            entries.append((re.compile(pattern), REQUIRED_LITERAL.get(pattern), True))
        self.entries = tuple(entries)

    def finditer(self, text: str, pos: int = 0) -> Iterator[re.Match[str]]:
        lowered: str | None = None
        for compiled, literal, boundary in self.entries:  # literal: any of these must occur
            if literal is not None:
                haystack = text
                if compiled.flags & re.IGNORECASE:
                    lowered = text.lower() if lowered is None else lowered
                    haystack = lowered
                if not any(part in haystack for part in literal):
                    continue
            for m in compiled.finditer(text, pos):
                if boundary and m.start() > 0 and (text[m.start() - 1].isalnum() or text[m.start() - 1] in "_-"):
                    continue
                yield m


SECRET_PATTERNS = SecretPatterns()
