-- wrk: durable reservations of one unit on one hot SKU ("hot"), each acknowledged after fsync.
wrk.method = "POST"
wrk.path = "/v1/skus/hot/reservations"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("ADMIN_TOKEN")
wrk.body = '{"qty":1,"ttl_seconds":3600}'
