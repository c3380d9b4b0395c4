select id, region, amount, currency, booked_at
from {{ source('sales', 'revenue') }}
