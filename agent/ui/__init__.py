"""What a person sees: the `line` command (`cli`), its consoles, progress and flags
(`console`), untrusted text made safe for a terminal (`terminal`), the text of a unit's
summary row (`summaries`) and the self-contained HTML report (`report`, with its Jinja2
templates in `report_templates/`). The chat's terminal loop lives beside the chat graph."""
