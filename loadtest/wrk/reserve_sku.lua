-- wrk: durable reservations of one unit on the SKU named by $SKU, each acknowledged after
-- fsync; placed by the server's [allocation] strategy.
wrk.method = "POST"
wrk.path = "/v1/skus/" .. os.getenv("SKU") .. "/reservations"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("ADMIN_TOKEN")
wrk.body = '{"qty":1,"ttl_seconds":3600}'
