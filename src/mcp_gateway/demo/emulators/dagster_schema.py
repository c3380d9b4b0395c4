"""The GraphQL schema the Dagster emulator (``dagster.py``) serves: a faithful subset of Dagster's.

Type, field, union, enum and input names are Dagster's own, so a query that would not validate
against Dagster fails against the emulator too.
"""

from __future__ import annotations

SCHEMA_SDL = """
type Query {
  version: String!
  runOrError(runId: ID!): RunOrError!
  runsOrError(filter: RunsFilter, cursor: String, limit: Int): RunsOrError!
  logsForRun(runId: ID!, afterCursor: String, limit: Int): EventConnectionOrError!
}
type Mutation {
  launchRun(executionParams: ExecutionParams!): LaunchRunResult!
  launchRunReexecution(executionParams: ExecutionParams, reexecutionParams: ReexecutionParams):
    LaunchRunReexecutionResult!
}
scalar RunConfigData
enum RunStatus { QUEUED NOT_STARTED MANAGED STARTING STARTED SUCCESS FAILURE CANCELING CANCELED }
enum ReexecutionStrategy { FROM_FAILURE FROM_ASSET_FAILURE ALL_STEPS }
enum LogLevel { CRITICAL ERROR INFO WARNING DEBUG }
enum EvaluationErrorReason {
  RUNTIME_TYPE_MISMATCH MISSING_REQUIRED_FIELD MISSING_REQUIRED_FIELDS FIELD_NOT_DEFINED
  FIELDS_NOT_DEFINED SELECTOR_FIELD_ERROR
}
enum DagsterEventType {
  STEP_START STEP_SUCCESS STEP_FAILURE STEP_SKIPPED RUN_ENQUEUED RUN_DEQUEUED RUN_STARTING RUN_START
  RUN_SUCCESS RUN_FAILURE RUN_CANCELING RUN_CANCELED ENGINE_EVENT
}
input ExecutionTag { key: String! value: String! }
input JobOrPipelineSelector {
  pipelineName: String jobName: String repositoryName: String! repositoryLocationName: String!
  solidSelection: [String!]
}
input ExecutionMetadata { runId: String tags: [ExecutionTag!] rootRunId: String parentRunId: String }
input ExecutionParams {
  selector: JobOrPipelineSelector! runConfigData: RunConfigData mode: String
  executionMetadata: ExecutionMetadata stepKeys: [String!] preset: String
}
input ReexecutionParams {
  parentRunId: String! strategy: ReexecutionStrategy! extraTags: [ExecutionTag!] useParentRunTags: Boolean
}
input RunsFilter {
  runIds: [String] pipelineName: String tags: [ExecutionTag!] statuses: [RunStatus!] snapshotId: String
  updatedAfter: Float updatedBefore: Float createdBefore: Float createdAfter: Float mode: String
}
interface Error { message: String! }
type PythonError implements Error { message: String! className: String stack: [String!]! }
type RunNotFoundError implements Error { runId: String! message: String! }
type PipelineNotFoundError implements Error {
  message: String! pipelineName: String! repositoryName: String! repositoryLocationName: String!
}
type RunConflict implements Error { message: String! }
type UnauthorizedError implements Error { message: String! }
type InvalidSubsetError implements Error { message: String! }
type PresetNotFoundError implements Error { preset: String! message: String! }
type ConflictingExecutionParamsError implements Error { message: String! }
type NoModeProvidedError implements Error { pipelineName: String! message: String! }
type InvalidPipelineRunsFilterError implements Error { message: String! }
type InvalidStepError { invalidStepKey: String! }
type InvalidOutputError { stepKey: String! invalidOutputName: String! }
interface PipelineConfigValidationError { message: String! path: [String!]! reason: EvaluationErrorReason! }
type FieldNotDefinedConfigError implements PipelineConfigValidationError {
  message: String! path: [String!]! reason: EvaluationErrorReason! fieldName: String!
}
type RunConfigValidationInvalid { pipelineName: String! errors: [PipelineConfigValidationError!]! }
type PipelineTag { key: String! value: String! }
type RepositoryOrigin { id: String! repositoryLocationName: String! repositoryName: String! }
type Run {
  id: ID! runId: String! status: RunStatus! jobName: String! pipelineName: String!
  repositoryOrigin: RepositoryOrigin tags: [PipelineTag!]! rootRunId: String parentRunId: String
  startTime: Float endTime: Float updateTime: Float creationTime: Float! runConfigYaml: String!
  stepKeysToExecute: [String!] canTerminate: Boolean!
}
type Runs { results: [Run!]! count: Int }
type LaunchRunSuccess { run: Run! }
interface MessageEvent {
  runId: String! message: String! timestamp: String! level: LogLevel! stepKey: String
  eventType: DagsterEventType
}
type ExecutionStepStartEvent implements MessageEvent {
  $MESSAGE_FIELDS
}
type ExecutionStepSuccessEvent implements MessageEvent {
  $MESSAGE_FIELDS
}
type ExecutionStepSkippedEvent implements MessageEvent {
  $MESSAGE_FIELDS
}
type ExecutionStepFailureEvent implements MessageEvent {
  $MESSAGE_FIELDS
  error: PythonError
}
type RunEnqueuedEvent implements MessageEvent {
  $MESSAGE_FIELDS
  pipelineName: String!
}
type RunStartEvent implements MessageEvent {
  $MESSAGE_FIELDS
  pipelineName: String!
}
type RunSuccessEvent implements MessageEvent {
  $MESSAGE_FIELDS
  pipelineName: String!
}
type RunFailureEvent implements MessageEvent {
  $MESSAGE_FIELDS
  pipelineName: String! error: PythonError
}
union DagsterRunEvent = ExecutionStepStartEvent | ExecutionStepSuccessEvent | ExecutionStepSkippedEvent
  | ExecutionStepFailureEvent | RunEnqueuedEvent | RunStartEvent | RunSuccessEvent | RunFailureEvent
type EventConnection { events: [DagsterRunEvent!]! cursor: String! hasMore: Boolean! }
union LaunchRunResult = LaunchRunSuccess | InvalidStepError | InvalidOutputError | RunConfigValidationInvalid
  | PipelineNotFoundError | RunConflict | UnauthorizedError | PythonError | InvalidSubsetError
  | PresetNotFoundError | ConflictingExecutionParamsError | NoModeProvidedError
union LaunchRunReexecutionResult = LaunchRunSuccess | InvalidStepError | InvalidOutputError
  | RunConfigValidationInvalid | PipelineNotFoundError | RunConflict | UnauthorizedError | PythonError
  | InvalidSubsetError | PresetNotFoundError | ConflictingExecutionParamsError | NoModeProvidedError
union RunOrError = Run | RunNotFoundError | PythonError
union RunsOrError = Runs | InvalidPipelineRunsFilterError | PythonError
union EventConnectionOrError = EventConnection | RunNotFoundError | PythonError
""".replace(
    "$MESSAGE_FIELDS",
    "runId: String! message: String! timestamp: String! level: LogLevel! stepKey: String\n"
    "  eventType: DagsterEventType",
)
