SELECT COUNT(*) FROM "ANALYTICS"."SALES"."OPPORTUNITIES__branch__fix" WHERE "Id" = ? AND "stage" IN (?, ?) AND "closed_at" IS NULL AND "amount" <> ?
