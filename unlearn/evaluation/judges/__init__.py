"""Harm judges, beside :mod:`unlearn.evaluation.metrics` and :mod:`unlearn.evaluation.attacks`.

One base class (:class:`~.base.HarmJudge`: the rules of :mod:`unlearn.evaluation.rules`, then the
judge's own model), one builder (:func:`~.base.build_judge`, from the ``judge`` config group) and
one module per judge:

* :mod:`.embedded` — the offline CPU judge (features: :mod:`.features`; training rows:
  :mod:`.training_data`), the default;
* :mod:`.beaver_dam` — Beaver-Dam-7B, the paper's judge (GPU);
* :mod:`.llama_guard`, :mod:`.harmbench` — causal-LM judges answering a verdict word
  (:mod:`.causal_lm`; checkpoints through :mod:`.checkpoint`).

:mod:`.report` measures any of them on held-out labels (``python -m unlearn.judge``). A new judge
is one module with a :class:`~.base.HarmJudge` subclass and one ``conf/judge/<name>.yaml``.
"""

from unlearn.evaluation.judges.base import HarmJudge, Verdict, build_judge

__all__ = ["HarmJudge", "Verdict", "build_judge"]
