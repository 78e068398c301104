"""``distill review``: a local web app where people check the oracle's answers.

- :mod:`.store`: the reviews (SQLite, WAL), the review queue and repair proposals
- :mod:`.dataset`: the labelled records and what is known about them (gold, other oracles, student)
- :mod:`.forms`: the task's JSON schema as a form, and back
- :mod:`.sampling`: what to review first (random, uncertain, disagreement)
- :mod:`.export`: ``data/reviews/reviews.jsonl`` (merge's input) and ``metrics/review.json``
- :mod:`.repair`: one more conversation turn asking the oracle to fix an answer
- :mod:`.render`: the Jinja2 templates (also used by ``distill report --html``)
- :mod:`.app`, :mod:`.server`: the FastAPI app, and binding it safely (loopback, or a token)

FastAPI, uvicorn and Jinja2 are imported only by the modules that serve or render.
"""
