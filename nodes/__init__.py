"""Ready-made example graphs built only on lift_graph's public API.

Each module has a state model, its nodes, ``build_graph()`` and ``async
run_example(...) -> RunResult``, and runs offline on ``nodes.fake_lm.FakeLM``:
``rag``, ``map_reduce``, ``self_consistency``, ``agent_loop``, ``fallback_race``.
``python -m nodes.demo`` runs all five.
"""
