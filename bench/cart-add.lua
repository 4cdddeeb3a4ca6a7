-- POST /api/cart/add with a JSON body, as the seed's clients do (abab -s).
wrk.method = "POST"
wrk.body = '{"productId": 1, "quantity": 1}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Id"] = "bench"
