select region, month, forecast_amount, updated_at
from {{ source('sales', 'us_forecast_dec_v1') }}
