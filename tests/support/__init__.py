"""What the tests share: one CLI runner, the tiny-model builders, the real peers (OSC,
JACK, a scripted OpenAI-compatible server), and small helpers for the engines' records."""
