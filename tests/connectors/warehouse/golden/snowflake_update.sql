UPDATE "ANALYTICS"."SALES"."OPPORTUNITIES__branch__fix" SET "Amount" = ?, "note" = ? WHERE "Id" = ? AND "stage" IN (?, ?) AND "closed_at" IS NULL AND "amount" <> ?
