"""The interactive web app: ``pointseg serve``.

Which file does what (requests flow down this list; imports only go down it too):

* ``command.py`` — the ``serve`` command: opens the project, registers ``--images`` folders, checks the
  port and backbone, starts uvicorn; the backbone is pinned into the project only once the server runs.
* ``app.py`` — :func:`create_app`: builds the services, adds the guards, maps every known failure to a
  one-line JSON error, includes the routers.
* ``guards.py`` — Host/Origin/token checks, streaming request-body limits, security headers, messages
  without server paths; the one loopback host set.
* ``routes/`` — one ``APIRouter`` per area (``images``, ``annotations``, ``classes``, ``model`` — live
  predictions and "predict all" —, ``export``, ``events``, ``project`` — summary, status, method
  settings —, ``page``); short handlers with typed models from ``schemas.py`` and services from
  ``deps.py`` via ``Depends`` (testable in-process with FastAPI's TestClient).
* ``scheduler.py`` — threads, priorities, debounce, futures and events, nothing else: the one place that
  resolves futures and publishes events.
* ``model_service.py`` — plain calls that return values: fit, predict, cross-validate (the library's one
  protocol, fold by fold), save, "predict all" planned and recorded through ``pointseg.batch`` (the CLI's
  engine, reading the feature maps already computed); and the feature maps by image id.
* ``exports.py`` — annotation file, summary rows, results zip, model file (run as scheduler jobs).
* ``ranking.py`` — the "next image to annotate" order (``pointseg.decision``'s ranking), one scheduler job
  per image, scores kept per model version.
* ``media.py`` — image files: folder registration, uploads, display files, thumbnails.
* ``render.py`` — compact PNG encodings of predictions, summary stats, click suggestions.
* ``store.py`` — the project in SQLite (WAL): images, classes, annotations with undo log, settings,
  model versions, predictions; schema migrations.
* ``static/`` — the page (ES modules, no build step).
"""
