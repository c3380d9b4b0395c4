select r.region, f.forecast_amount, r.amount as booked_amount
from {{ ref('fct_revenue_by_region') }} as r
left join {{ ref('stg_forecast') }} as f on f.region = r.region
