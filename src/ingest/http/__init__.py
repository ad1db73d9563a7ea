"""HTTP: retry policy, rate limit, circuit breaker, paginators and the assembled client."""
