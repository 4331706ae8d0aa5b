"""One APIRouter per area of the API; :func:`pointseg.server.app.create_app` includes them all."""
from pointseg.server.routes import annotations, classes, events, export, images, model, page, project

ROUTERS = [page.router, project.router, images.router, annotations.router, classes.router, model.router,
           export.router, events.router]
