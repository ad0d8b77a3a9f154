"""The agent: LangGraph graphs and everything that runs them, in rooms by responsibility.

- `loop/`: the labelling graph (state, topology, thin nodes, the one concept path,
  proposals, operators, stall policy, label choice);
- `chat/`: the conversational graph, its JSON actions for weak LLMs, the session;
- `runs/`: a run's life (create, resume, backends: local threads and Ray, store, locks);
- `ui/`: the `line` command, consoles and progress, text summaries, the HTML report;
- `config` (settings from files, environment and flags) and `llm` (LLM providers) serve
  them all.

Arrows point down: `ui` uses `chat` and `runs`, which use `loop`; all of them use `config`,
`llm`, `tools` and `prompts`; `tools` imports nothing of ours above it.
"""
