"""Evaluation of a model before/after unlearning (DESIGN.md §2).

Modules, one per concern (nothing is loaded at import time):

* :mod:`~unlearn.evaluation.generation`: greedy, batched, left-padded answers to held-out prompts;
* :mod:`~unlearn.evaluation.rules`: degenerate / refusal rules shared by the judges;
* :mod:`~unlearn.evaluation.judges.embedded`, :mod:`~unlearn.evaluation.judges.beaver_dam`: harm judges;
* :mod:`~unlearn.evaluation.toxicity`: Detoxify and the offline toxicity/obscenity scorers;
* :mod:`~unlearn.evaluation.diversity`, :mod:`~unlearn.evaluation.perplexity`: fluency, utility;
* :mod:`~unlearn.evaluation.stage`: the whole evaluation, its cache and the hook used by
  :mod:`unlearn.experiment`.
"""
