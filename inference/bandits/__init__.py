"""Bandit routers for pipelines: epsilon-greedy, Thompson sampling, UCB1; the feedback
ledger; state in Redis (or the database on the embedded default).

    from inference.bandits import decide, validate_config
    decide(router_key, arms, config, request_id) -> Decision(arm, propensity)

docs/pipelines.md, "Routers and feedback", is the reference.
"""

from inference.bandits.config import RouterConfigError
from inference.bandits.router import Decision, decide, seed, validate_config

__all__ = ["Decision", "RouterConfigError", "decide", "seed", "validate_config"]
