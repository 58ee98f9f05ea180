"""Pure-Python core: entities, reply events, the error tree and the ports services call.

Nothing in here imports FastAPI, SQLAlchemy, httpx or any other layer of Threadline.
"""
