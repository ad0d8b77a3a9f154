"""Label the unexpressible planted units (evals/suites/unexpressible.toml) with the default
loop and a scripted LLM (closed-vocabulary concepts), and write each label's verdict.

    python -m evals.unexpressible --out evals/results/unexpressible-trust [--cache-dir DIR]
"""

import argparse
import json
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from agent.config import load_settings
from agent.runs.engine_factory import build_engine
from agent.runs.context import build_context
from agent.runs.run import Run
from agent.ui.summaries import summary_row
from evals.planted import pinned_spec
from evals.run import make_chat


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    runs = tempfile.mkdtemp(prefix="line-unexpressible-")
    settings = load_settings(model=pinned_spec("evals/suites/unexpressible.toml"), layer="units",
                             llm={"provider": "scripted"}, runs_dir=runs,
                             **({"cache_dir": args.cache_dir} if args.cache_dir else {}))
    run = Run.create(settings, [0, 1, 2], "unexpressible")
    states = run.label(build_context(settings, build_engine(settings), chat=make_chat(settings)))
    rows = [summary_row(s, settings.loop.judge()) | {"reason": s.label.confidence.reason if s.label and s.label.confidence else ""}
            for s in states.values()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "units.json").write_text(json.dumps(rows, indent=1, default=str))
    (out / "config.json").write_text(json.dumps({"created": datetime.now().isoformat(timespec="seconds"),
                                                 "command": sys.argv, "settings": settings.public()}, indent=1,
                                                default=str))
    for row in rows:
        print(row["unit"], row["label"], row["explained"], row["fresh_auc"], row["fresh_auc_interval"], row["p"],
              row["natural_auc"], row["meanings"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
