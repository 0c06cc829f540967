-- wrk script: POST the JSON body in BENCH_BODY with the API key in BENCH_KEY.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Host"] = os.getenv("BENCH_HOST")
wrk.headers["X-Server-API-Key"] = os.getenv("BENCH_KEY")

done = function(summary, latency, requests)
  io.write(string.format("non-2xx-or-errors: %d\n",
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
