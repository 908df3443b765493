"""The servers over one Chronik app: gRPC (``grpc``, ``grpc_edge``, ``grpc_admin``), HTTP
(``http`` and its handler modules, ``problems``, ``openapi``), remote business logic, projectors
and sagas (``remote``), the config file (``config``) and the admin UI (``admin/``).

``status`` is the one table from chronik's errors to HTTP statuses, gRPC codes and problem
types; it imports ``chronik.errors`` only, so the client and the SDK import it too (as they
import ``wire``). Modules here may import chronik's core (app, store, projections, transports);
nothing in the core imports ``chronik.server``, and nothing here imports ``chronik.cli``.
"""
