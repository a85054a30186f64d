"""Reuse the log-prob forwards RLOO already runs when it scores a generation batch.

`RLOOTrainer._generate_and_score_completions` runs, without gradients, the policy forward behind `old_logps` and, when
`beta != 0`, the reference forward behind its KL penalty, in that order and before `_calculate_rewards`; it keeps only
sequence sums. J-BOND needs the per-token policy log-probs (k3 KL metric) and vBoN's `exact` objective needs the
reference log-probs of each completion. Recording them here instead of running the forwards again halves that work;
`tests/contract/test_rloo_contract.py` pins the call order this relies on.
"""

from contextlib import contextmanager


class ScoringForwardsMixin:
    """Records the per-token log-probs of every `_get_per_token_logps_and_entropies` call made while recording."""

    _scoring_forwards: list | None = None

    def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
        output = super()._get_per_token_logps_and_entropies(model, *args, **kwargs)
        if self._scoring_forwards is not None:
            self._scoring_forwards.append(output[0])
        return output

    @contextmanager
    def _record_scoring_forwards(self):
        """Inside: the per-token log-probs of each forward, in call order ([policy, reference if beta != 0])."""
        self._scoring_forwards = []
        try:
            yield self._scoring_forwards
        finally:
            self._scoring_forwards = None
