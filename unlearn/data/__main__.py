"""``python -m unlearn.data``: write and check the local data folder (:mod:`unlearn.data.prepare`)."""

from unlearn.data.prepare import main

raise SystemExit(main())
