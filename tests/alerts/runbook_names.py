"""The names tests/alerts/runbook_app.py records under, for the tests that query them: importing the app itself
would start its GPU poller, drift monitor and metrics in the test's process."""

SERVICE, MODEL, QUEUE, CACHE, FEATURE = "recommender", "ranker", "ranker-batch", "user-features", "age"
#: the peer name ``GET /skewed`` reports
SKEWED_PEER = "skewed-clock"
