select id, name, stage, amount, currency, updated_at
from {{ source('sales', 'opportunities') }}
