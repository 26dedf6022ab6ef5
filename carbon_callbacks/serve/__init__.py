"""``carbon-callbacks serve``: a read-only team view of the ledger in the browser.

Four pages: the Overview (``report``'s totals per team, project, user and month, with ranges,
filtered by time and tag), the Runs table (sorted, filtered and paged by the database), one Run
(its metric against cumulative CO2e with the shoulder and the stop, energy per epoch by
component, the same energy in other regions, the intensity hour by hour), and Compare (runs
or an Optuna study's trials as metric against CO2e, with the Pareto front and its knee).

Needs the ``serve`` extra (Starlette, uvicorn, Jinja2, Plotly for its bundled JavaScript)::

    pip install 'carbon-callbacks[serve]'
    carbon-callbacks serve --ledger team.sqlite        # http://127.0.0.1:8765

or, from Python (any ASGI server)::

    from carbon_callbacks.ledger import Ledger
    from carbon_callbacks.serve import create_app
    app = create_app(Ledger.open("team.sqlite", read_only=True))
"""

from __future__ import annotations

from carbon_callbacks.serve.app import create_app

__all__ = ["create_app"]
