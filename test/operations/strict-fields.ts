import { join } from 'node:path';

import ts from 'typescript';

import { ROOT } from '../../scripts/processes.js';

/** Kubernetes kinds the field check covers, by `apiVersion/kind`, with the kubernetes-models type. */
const KIND_TYPES: Record<string, { module: string; type: string }> = {
  'v1/Namespace': { module: 'kubernetes-models/v1/Namespace', type: 'INamespace' },
  'v1/Service': { module: 'kubernetes-models/v1/Service', type: 'IService' },
  'v1/Secret': { module: 'kubernetes-models/v1/Secret', type: 'ISecret' },
  'apps/v1/Deployment': { module: 'kubernetes-models/apps/v1/Deployment', type: 'IDeployment' },
  'apps/v1/StatefulSet': { module: 'kubernetes-models/apps/v1/StatefulSet', type: 'IStatefulSet' },
  'autoscaling/v2/HorizontalPodAutoscaler': {
    module: 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler',
    type: 'IHorizontalPodAutoscaler',
  },
  'policy/v1/PodDisruptionBudget': {
    module: 'kubernetes-models/policy/v1/PodDisruptionBudget',
    type: 'IPodDisruptionBudget',
  },
};

/**
 * Finds fields that the Kubernetes API does not define, as `kubectl apply --validate=strict`
 * rejects them. The JSON schemas that kubernetes-models validates with allow unknown fields, so
 * this check walks each object along the TypeScript declarations of the same package, which
 * kubernetes-models generates from the same OpenAPI document and which list every field.
 * Objects typed as maps (labels, annotations, Secret data) accept any key.
 */
export class StrictFieldCheck {
  readonly #checker: ts.TypeChecker;
  readonly #kinds = new Map<string, ts.Type>();

  constructor() {
    // A virtual module in test/operations resolves kubernetes-models from the repository.
    const entry = join(ROOT, 'test', 'operations', '__strict-fields__.ts');
    const source = Object.entries(KIND_TYPES)
      .map(([, { module, type }], i) => `import type { ${type} as K${i} } from '${module}';`)
      .concat(`export type Kinds = [${Object.keys(KIND_TYPES).map((_, i) => `K${i}`)}];`)
      .join('\n');
    const options: ts.CompilerOptions = {
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      lib: ['lib.es2022.d.ts'],
      types: [],
      noEmit: true,
      skipLibCheck: true,
    };
    const host = ts.createCompilerHost(options);
    const getSourceFile = host.getSourceFile.bind(host);
    host.getSourceFile = (file, language) =>
      file === entry ? ts.createSourceFile(file, source, language) : getSourceFile(file, language);
    const fileExists = host.fileExists.bind(host);
    host.fileExists = (file) => file === entry || fileExists(file);
    const program = ts.createProgram([entry], options, host);
    this.#checker = program.getTypeChecker();

    const file = program.getSourceFile(entry);
    const alias = file?.statements.find(ts.isTypeAliasDeclaration);
    if (alias === undefined) throw new Error('kubernetes-models declarations did not load');
    const tuple = this.#checker.getTypeAtLocation(alias) as ts.TypeReference;
    const members = this.#checker.getTypeArguments(tuple);
    Object.keys(KIND_TYPES).forEach((kind, i) => this.#kinds.set(kind, members[i]));
  }

  /** Returns true when the check covers `apiVersion/kind`. */
  knows(kind: string): boolean {
    return this.#kinds.has(kind);
  }

  /**
   * Returns the path of every field of `value` that its kind does not define, such as
   * `spec.template.spec.containers[0].readinessProbe.httpGett`.
   *
   * @throws Error when the kind is not one of {@link KIND_TYPES}.
   */
  unknownFields(kind: string, value: unknown): string[] {
    const type = this.#kinds.get(kind);
    if (type === undefined) throw new Error(`no field list for ${kind}`);

    const unknown: string[] = [];
    this.#walk(type, value, '', unknown);
    return unknown;
  }

  #walk(type: ts.Type, value: unknown, path: string, unknown: string[]): void {
    if (value === null || typeof value !== 'object') return;
    const target = this.#checker.getNonNullableType(type);

    if (Array.isArray(value)) {
      if (!this.#checker.isArrayType(target)) return;
      const [element] = this.#checker.getTypeArguments(target as ts.TypeReference);
      value.forEach((item, i) => this.#walk(element, item, `${path}[${i}]`, unknown));
      return;
    }
    // The schema validator reports type errors. A map or a union of shapes accepts every key.
    if ((target.flags & ts.TypeFlags.Object) === 0) return;
    if (this.#checker.getIndexInfosOfType(target).length > 0) return;

    for (const [key, field] of Object.entries(value)) {
      const fieldPath = path === '' ? key : `${path}.${key}`;
      const property = target.getProperty(key);
      if (property === undefined) {
        unknown.push(fieldPath);
        continue;
      }
      this.#walk(this.#checker.getTypeOfSymbol(property), field, fieldPath, unknown);
    }
  }
}
