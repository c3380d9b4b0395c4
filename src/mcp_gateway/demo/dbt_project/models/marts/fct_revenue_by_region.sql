select region, currency, sum(amount) as amount
from {{ ref('stg_revenue') }}
group by region, currency
