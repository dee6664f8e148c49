"""A request whose worst-case cost does not fit a budget: clamp its ``max_tokens``, or say exactly why not.

The budget limiter reserves the worst case (prompt estimate x input price + ``max_tokens``, else the
model's output cap, x output price). A budget with a little left refuses a request that would in fact
cost far less, so the refusal must say so, and what would help:

- the estimate is larger than the budget's whole ``max_budget``: no window reset makes it fit, so it is a
  400 (``max_tokens_exceeds_budget``, no ``retry-after``: retrying the same request is pointless);
- otherwise a 429 ``ProxyRateLimitError`` naming the estimate and what is left, whose ``retry-after`` is the
  window's end (an empty window does fit it);
- a key (or team) with ``budget_clamp_max_tokens`` instead gets its ``max_tokens`` lowered to what the
  remaining budget can pay for: the reservation is made with the clamped value, the upstream receives it,
  so the request runs and still cannot overspend. The answer carries ``x-gateway-max-tokens-clamped``.
"""

from __future__ import annotations

import math
from decimal import ROUND_FLOOR, Decimal

from apps.proxy.context import RequestContext
from apps.proxy.errors import GatewayError
from apps.proxy.tokens import explicit_max_tokens, set_max_tokens
from apps.ratelimit.errors import ProxyRateLimitError
from apps.ratelimit.plan import Check, Plan, Refusal, nano_to_usd, usd_to_nano

CLAMPED_HEADER = "x-gateway-max-tokens-clamped"
# Each clamp lowers max_tokens; another budget (or a concurrent request) may refuse the lower value too.
MAX_CLAMPS = 4
# The prompt is an estimate (chars / 4); providers count more (per-message overhead, tokenizer). The clamp
# leaves room for a prompt this much larger, so the real cost stays within what the budget has left.
PROMPT_MARGIN = Decimal("1.25")
PROMPT_MARGIN_TOKENS = 16


def clamp_max_tokens(ctx: RequestContext, plan: Plan, check: Check, refusal: Refusal) -> bool:
    """Lower the request's max_tokens so ``check`` (a refused cost check) fits what it has left.

    True when the plan and the body were changed and the caller should reserve again; False when the
    key does not ask for it or not even one output token fits.
    """
    if not _clamps(ctx) or check.reconcile != "cost" or ctx.max_output_tokens <= 1:
        return False
    price = ctx.output_cost_per_token
    fixed = _prompt_cost(ctx)
    tokens = min(_affordable(ctx, int((check.limit or 0) - refusal.used)), ctx.max_output_tokens - 1)
    if tokens < 1:
        return False
    ctx.max_output_tokens = tokens
    ctx.estimated_cost = fixed + price * tokens
    cost = max(1, usd_to_nano(ctx.estimated_cost))
    token_amount = max(0, int(ctx.estimated_prompt_tokens)) + tokens
    for each in plan.checks:
        if each.reconcile == "cost":
            each.amount = cost
        elif each.reconcile == "tokens" and each.limit_type == "tokens":
            each.amount = token_amount
    set_max_tokens(ctx.body, ctx.route, ctx.llm_provider, tokens)
    ctx.response_headers[CLAMPED_HEADER] = str(tokens)
    return True


def _clamps(ctx: RequestContext) -> bool:
    return ctx.key.budget_clamp_max_tokens and ctx.output_cost_per_token > 0


def _prompt_cost(ctx: RequestContext) -> Decimal:
    """The prompt's part of the estimate (what is left once the output tokens are taken out)."""
    return ctx.estimated_cost - ctx.output_cost_per_token * ctx.max_output_tokens


def _affordable(ctx: RequestContext, nano: int) -> int:
    """Output tokens ``nano`` nano-USD pay for after the prompt (with its margin); may be < 1."""
    price, prompt = ctx.output_cost_per_token, _prompt_cost(ctx)
    prompt_tokens = max(0, int(ctx.estimated_prompt_tokens))
    margin = prompt * (PROMPT_MARGIN - 1) + (prompt / prompt_tokens * PROMPT_MARGIN_TOKENS if prompt_tokens else 0)
    tokens = int(((nano_to_usd(nano) - prompt - margin) / price).to_integral_value(rounding=ROUND_FLOOR))
    while tokens >= 1 and usd_to_nano(prompt + price * tokens) > nano:
        tokens -= 1  # the reservation rounds up to the next nano-USD
    return tokens


def budget_refusal(ctx: RequestContext, check: Check, refusal: Refusal) -> ProxyRateLimitError | GatewayError:
    """The refusal of a budget check: exhausted, or only too small for this request's worst case."""
    retry_after = max(refusal.retry_ms, 1) / 1000.0
    limit = int(check.limit or 0)
    limit_usd = nano_to_usd(limit)
    remaining_usd = max(Decimal(0), limit_usd - nano_to_usd(refusal.used))
    # Never fits: more than the whole budget, even once a clamping key's max_tokens is lowered.
    never = check.amount > limit and not (_clamps(ctx) and check.reconcile == "cost" and _affordable(ctx, limit) >= 1)
    if refusal.used < limit and never:
        return GatewayError(
            400,
            f"This request's worst-case cost, {_estimate(ctx, check)}, is more than the whole budget of "
            f"{check.label} ({limit_usd:.6f} USD{_per_window(check)}): it cannot run as sent. "
            f"{_advice(ctx, whole=True)}",
            param="max_tokens",
            code="max_tokens_exceeds_budget",
            kind="budget_estimate",
        )
    if refusal.used < limit:
        parts = (
            f"Budget of {check.label}: {remaining_usd:.6f} of {limit_usd:.6f} USD left{_in_window(check)}, less than "
            f"this request's worst-case cost, {_estimate(ctx, check)}.",
            _advice(ctx, whole=False),
            _when(check, retry_after),
        )
        message = " ".join(part for part in parts if part)
    else:
        message = (
            f"Budget exceeded for {check.label}: {nano_to_usd(refusal.used):.6f} of {limit_usd:.6f} USD used "
            f"in the current budget window. Retry after {math.ceil(retry_after)} s."
        )
    return ProxyRateLimitError(
        message, limit_type="budget", scope=check.scope, retry_after=retry_after,
        llm_provider=ctx.llm_provider, model=ctx.model, limit=float(limit_usd), remaining=float(remaining_usd),
    )  # fmt: skip


def _lifetime(check: Check) -> bool:
    return check.seed is not None and check.seed[2] == "all"


def _estimate(ctx: RequestContext, check: Check) -> str:
    text = f"{nano_to_usd(check.amount):.6f} USD"
    if ctx.output_cost_per_token > 0:
        cap = "" if explicit_max_tokens(ctx.body) is not None else " (the model's cap: the request set none)"
        text += f" ({ctx.estimated_prompt_tokens} prompt tokens plus max_tokens {ctx.max_output_tokens}{cap})"
    return text


def _per_window(check: Check) -> str:
    if check.scope == "session":
        return " per session"
    return "" if _lifetime(check) else " per budget window"


def _in_window(check: Check) -> str:
    if check.scope == "session":
        return " in this session"
    return "" if _lifetime(check) else " in the current budget window"


def _advice(ctx: RequestContext, *, whole: bool) -> str:
    if ctx.output_cost_per_token <= 0:
        return "Send a smaller request." if whole else ""
    if ctx.key.budget_clamp_max_tokens:
        if whole:
            return "Even with max_tokens lowered to 1 it does not fit: shorten the prompt."
        return "Not even max_tokens 1 fits what is left (max_tokens is lowered for this key when that helps)."
    return "Lower max_tokens (or set budget_clamp_max_tokens on the key to have it lowered)."


def _when(check: Check, retry_after: float) -> str:
    if _lifetime(check):
        return "This budget has no window that resets."
    return f"Retry after {math.ceil(retry_after)} s, when the window resets."
