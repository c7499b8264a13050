"""A FastAPI app that starts graph runs and streams their events as Server-Sent Events."""
