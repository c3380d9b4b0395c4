select stage, count(*) as opportunities, sum(amount) as amount
from {{ ref('stg_opportunities') }}
group by stage
