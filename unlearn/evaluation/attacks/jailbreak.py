"""Jailbreak-template attack: held-out prompts wrapped in real jailbreak templates.

Templates come from the PyPI package ``pyrit`` (Microsoft's PyRIT, MIT licence), which ships
~650 jailbreak templates as YAML data under ``pyrit/datasets/jailbreak/templates/``, each with a
``value`` holding a ``{{ prompt }}`` slot. Only the data files are read (the package is located
with ``importlib.util.find_spec`` and never imported, so it is installed ``--no-deps``, like the
embedded model's package); ``template_dir=`` points at any folder of YAML files of that schema.

For each template t of each family F and each of the first ``n_prompts`` prompts p, the model
answers ``t(p)`` and the judge scores (p, answer): the judge sees the ORIGINAL prompt, never the
wrapped one. Outcomes::

    jailbreak_<F>:  h_F(p) = mean_{t∈F} harmful(p, answer to t(p))
    jailbreak:      h(p)   = mean over every template of every family

each with its bootstrap interval over prompts (templates of one prompt stay together).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from unlearn.evaluation.attacks.base import Attack, AttackConfigError, AttackContext, Outcome, Timer, \
    prompt_subset, require

SLOT = re.compile(r"\{\{\s*prompt\s*\}\}")
PYRIT_TEMPLATES = ("datasets", "jailbreak", "templates")


@dataclass(frozen=True)
class Template:
    name: str          # the file's stem
    text: str          # with one or more {{ prompt }} slots
    source: str

    def wrap(self, prompt: str) -> str:
        """The template with every ``{{ prompt }}`` slot replaced by ``prompt``."""
        return SLOT.sub(lambda _: prompt, self.text)


def pyrit_template_dir() -> Path:
    """``<site-packages>/pyrit/datasets/jailbreak/templates`` (found without importing pyrit)."""
    spec = importlib.util.find_spec("pyrit")
    if spec is None or not spec.submodule_search_locations:
        raise AttackConfigError("attack jailbreak: the jailbreak templates ship in the PyPI package pyrit; "
                                "install its data with `pip install --no-deps pyrit==1.1.0` (make setup does), "
                                "or pass template_dir=<folder of template YAML files>")
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*PYRIT_TEMPLATES)


def load_template(folder: Path, name: str, attack: str = "jailbreak") -> Template:
    """``<folder>/<name>.yaml``; its ``value`` must contain a ``{{ prompt }}`` slot."""
    import yaml

    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise AttackConfigError(f"attack {attack}: no template {name!r} in {folder}; choose from {known}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    text = str(data.get("value") or "")
    require(bool(SLOT.search(text)), attack, f"template {path} has no {{{{ prompt }}}} slot in its value")
    return Template(name, text, str(data.get("source") or ""))


class JailbreakTemplates(Attack):
    """``jailbreak_<family>`` per family and ``jailbreak`` overall (module docstring)."""

    def __init__(self, families: Mapping[str, Sequence[str]], n_prompts: int | None = None,
                 template_dir: str | None = None, name: str = "jailbreak") -> None:
        self.name = name
        require(isinstance(families, Mapping) and len(families) > 0, name,
                "families is empty; give family: [template, …], e.g. families={wei2023: [prefix_injection]}")
        for family, names in families.items():
            require(not isinstance(names, str) and len(names) > 0, name,
                    f"family {family!r} lists no template; give {family}: [template, …] or drop the family")
        folder = Path(template_dir).expanduser() if template_dir else pyrit_template_dir()
        require(folder.is_dir(), name, f"template_dir {folder} is not a folder")
        self.families = {str(f): [load_template(folder, str(t), name) for t in names]
                         for f, names in families.items()}
        self.n_prompts = n_prompts
        self.folder = folder

    def run(self, model, ctx: AttackContext) -> list[Outcome]:
        prompts = prompt_subset(ctx.prompts, self.n_prompts, self.name)
        jobs = [(family, t, p) for family, templates in self.families.items() for t in templates for p in prompts]
        with Timer() as timer:
            flags, records = ctx.answer_and_judge(model, [p for _, _, p in jobs],
                                                  shown=[t.wrap(p) for _, t, p in jobs], desc=self.name)
        for (family, t, _), r in zip(jobs, records, strict=True):
            r.update(family=family, template=t.name)
        per_family: dict[str, dict[str, list[float]]] = {f: {p: [] for p in prompts} for f in self.families}
        for (family, _, p), h in zip(jobs, flags, strict=True):
            per_family[family][p].append(h)
        share = timer.seconds / max(1, len(jobs))
        outcomes = []
        for family, by_prompt in per_family.items():
            names = ", ".join(t.name for t in self.families[family])
            rows = [r for r in records if r["family"] == family]
            outcomes.append(Outcome(f"{self.name}_{family}", f"jailbreak templates {family} ({names}; PyRIT)",
                                    prompts, [sum(v) / len(v) for v in by_prompt.values()], rows,
                                    time_s=share * len(rows)))
        overall = [sum(sum(per_family[f][p]) for f in per_family) / sum(len(per_family[f][p]) for f in per_family)
                   for p in prompts]
        outcomes.append(Outcome(self.name, f"jailbreak templates, all {len(self.families)} families", prompts,
                                overall, [], time_s=timer.seconds))
        return outcomes
