/**
 * API errors as the real server reports them: a `Status` object with reason, code and details.
 * Field errors render exactly like k8s.io/apimachinery's field.Error so that kubectl prints
 * the messages users know ("spec.ports[0].port: Invalid value: 70000: must be between ...").
 * Pure: no I/O.
 */

export type CauseReason =
  | 'FieldValueInvalid'
  | 'FieldValueRequired'
  | 'FieldValueDuplicate'
  | 'FieldValueNotSupported'
  | 'FieldValueForbidden'
  | 'FieldValueTooMany'
  | 'FieldValueTooLong';

const TYPE_TEXT: Record<CauseReason, string> = {
  FieldValueInvalid: 'Invalid value',
  FieldValueRequired: 'Required value',
  FieldValueDuplicate: 'Duplicate value',
  FieldValueNotSupported: 'Unsupported value',
  FieldValueForbidden: 'Forbidden',
  FieldValueTooMany: 'Too many',
  FieldValueTooLong: 'Too long',
};

/** One validation failure on one field, like field.Error. */
export class FieldError {
  constructor(
    readonly reason: CauseReason,
    readonly field: string,
    readonly value: unknown,
    readonly detail: string = '',
  ) {}

  /** field.Error.ErrorBody(): what goes into a Status cause's message. */
  body(): string {
    let s = TYPE_TEXT[this.reason];
    if (this.reason !== 'FieldValueRequired' && this.reason !== 'FieldValueForbidden' && this.reason !== 'FieldValueTooLong') {
      s += `: ${formatValue(this.value)}`;
    }
    if (this.detail) s += `: ${this.detail}`;
    return s;
  }

  toString(): string {
    return `${this.field}: ${this.body()}`;
  }
}

function formatValue(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return JSON.stringify(v);
}

export const fieldErr = {
  invalid: (field: string, value: unknown, detail: string) => new FieldError('FieldValueInvalid', field, value, detail),
  required: (field: string, detail = '') => new FieldError('FieldValueRequired', field, '', detail),
  duplicate: (field: string, value: unknown) => new FieldError('FieldValueDuplicate', field, value),
  forbidden: (field: string, detail: string) => new FieldError('FieldValueForbidden', field, '', detail),
  tooMany: (field: string, actual: number, max: number) =>
    new FieldError('FieldValueTooMany', field, actual, `must have at most ${max} items`),
  notSupported: (field: string, value: unknown, supported: readonly string[]) =>
    new FieldError(
      'FieldValueNotSupported',
      field,
      value,
      `supported values: ${supported.map((s) => JSON.stringify(s)).join(', ')}`,
    ),
};

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  causes?: { reason: string; message: string; field?: string }[];
  retryAfterSeconds?: number;
}

export interface StatusObject {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure' | 'Success';
  message?: string;
  reason?: string;
  details?: StatusDetails;
  code: number;
}

/** What a resource is called in messages: `services`, `endpointslices.discovery.k8s.io`, `Service`. */
export interface ResourceNames {
  group: string;
  plural: string;
  kind: string;
}

function qualified(name: string, group: string): string {
  return group ? `${name}.${group}` : name;
}

/** An error the HTTP layer turns into a Status response. */
export class ApiError extends Error {
  readonly code = 'FERRY_ERR_API';
  constructor(
    readonly httpCode: number,
    readonly reason: string,
    message: string,
    readonly details?: StatusDetails,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  toStatus(): StatusObject {
    const s: StatusObject = {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: this.message,
      reason: this.reason,
      code: this.httpCode,
    };
    if (this.details) s.details = this.details;
    return s;
  }

  static notFound(r: ResourceNames, name: string): ApiError {
    return new ApiError(404, 'NotFound', `${qualified(r.plural, r.group)} "${name}" not found`, details(r.plural, r.group, name));
  }

  static alreadyExists(r: ResourceNames, name: string): ApiError {
    return new ApiError(
      409,
      'AlreadyExists',
      `${qualified(r.plural, r.group)} "${name}" already exists`,
      details(r.plural, r.group, name),
    );
  }

  static conflict(r: ResourceNames, name: string, why = 'the object has been modified; please apply your changes to the latest version and try again'): ApiError {
    return new ApiError(
      409,
      'Conflict',
      `Operation cannot be fulfilled on ${qualified(r.plural, r.group)} "${name}": ${why}`,
      details(r.plural, r.group, name),
    );
  }

  static invalid(r: ResourceNames, name: string, errs: readonly FieldError[]): ApiError {
    const list = errs.length === 1 ? errs[0]!.toString() : `[${errs.map((e) => e.toString()).join(', ')}]`;
    const d = details(r.kind, r.group, name);
    d.causes = errs.map((e) => ({ reason: e.reason, message: e.body(), field: e.field }));
    return new ApiError(422, 'Invalid', `${qualified(r.kind, r.group)} "${name}" is invalid: ${list}`, d);
  }

  static forbidden(r: ResourceNames, name: string, why: string): ApiError {
    return new ApiError(
      403,
      'Forbidden',
      `${qualified(r.plural, r.group)} "${name}" is forbidden: ${why}`,
      details(r.plural, r.group, name),
    );
  }

  static badRequest(message: string): ApiError {
    return new ApiError(400, 'BadRequest', message);
  }

  static methodNotAllowed(): ApiError {
    return new ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
  }

  static notFoundPath(): ApiError {
    return new ApiError(404, 'NotFound', 'the server could not find the requested resource');
  }

  static unsupportedMediaType(contentType: string): ApiError {
    return new ApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got ${contentType})`);
  }

  static gone(message: string): ApiError {
    return new ApiError(410, 'Expired', message);
  }
}

function details(kind: string, group: string, name: string): StatusDetails {
  const d: StatusDetails = { name, kind };
  if (group) d.group = group;
  return d;
}

export function successStatus(r: ResourceNames, name: string, uid?: string): Record<string, unknown> {
  const d: Record<string, unknown> = { name, kind: r.plural };
  if (r.group) d['group'] = r.group;
  if (uid) d['uid'] = uid;
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details: d };
}
